//! Checks that start no daemon and train nothing: the source files' layering (`layering`),
//! deploy/ against the real settings and flags (`deploy`), and a bounded fuzz pass over every
//! parser of untrusted bytes (`fuzz`). One test binary: every test binary of this package links
//! libtorch, so fewer binaries link faster (docs/results.md, "Build and test time").
mod deploy;
mod fuzz;
mod layering;
