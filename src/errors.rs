//! Generic error helpers shared by every layer: an error's cause chain as one line, and whether
//! an error says that a disk is full. The mapping of errors to gRPC codes is `api::status`.

/// "outer: inner: …" for logs and stored task errors.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// True if `message` (an error chain as text) says a disk or quota is full.
pub fn is_out_of_space(message: &str) -> bool {
    const SIGNS: [&str; 4] = [
        "No space left on device",
        "os error 28",
        "Disk quota exceeded",
        "database or disk is full",
    ];
    SIGNS.iter().any(|s| message.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_space_is_recognised_in_error_chains() {
        assert!(is_out_of_space(
            "writing checkpoint /d/x: No space left on device (os error 28)"
        ));
        assert!(is_out_of_space("database error: database or disk is full"));
        assert!(!is_out_of_space("task data: sample 3 is corrupt"));
    }

    #[test]
    fn chain_and_out_of_space() {
        let inner = std::io::Error::from_raw_os_error(28);
        let outer = std::io::Error::other(inner);
        let chain = error_chain(&outer);
        assert!(is_out_of_space(&chain), "{chain}");
        assert!(!is_out_of_space("connection refused"));
    }
}
