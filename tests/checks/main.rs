//! Checks that start no daemon and train nothing: the source files' layering (`layering`),
//! deploy/ against the real settings and flags (`deploy`), deploy/k8s against the Kubernetes
//! schemas (`k8s`), a bounded fuzz pass over every
//! parser of untrusted bytes (`fuzz`), and that builds without tests reuse the tests' compiled
//! dependencies (`features`). One test binary: every test binary of this package links
//! libtorch, so fewer binaries link faster (docs/results.md, "Build and test time").
mod deploy;
mod features;
mod fuzz;
mod k8s;
mod layering;
