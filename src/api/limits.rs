//! Length limits of the strings a client sends that ctpd stores, checked before anything
//! reaches the database or the disk, so both backends accept exactly the same input (a
//! Postgres index row must fit in a page; SQLite has no such limit). A violation is
//! `INVALID_ARGUMENT` naming the field, its length and the limit. The proto documents each
//! limit next to its field.
use super::status::ApiError;

/// `TaskHeader.idempotency_key`, in bytes.
pub const IDEMPOTENCY_KEY_BYTES: usize = 256;
/// `TaskHeader.task_name`, in bytes.
pub const TASK_NAME_BYTES: usize = 200;
/// `Sample.id`, in bytes.
pub const SAMPLE_ID_BYTES: usize = 256;
/// `RollbackRequest.reason`, in bytes.
pub const REASON_BYTES: usize = 4096;

/// `INVALID_ARGUMENT` if `value` is longer than `max` bytes.
pub fn check(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(ApiError::Invalid(format!(
            "{field} is {} bytes; the limit is {max}",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_counted_in_bytes() {
        assert!(check("f", &"k".repeat(256), IDEMPOTENCY_KEY_BYTES).is_ok());
        let e = check(
            "header.idempotency_key",
            &"k".repeat(257),
            IDEMPOTENCY_KEY_BYTES,
        )
        .unwrap_err();
        assert!(
            matches!(&e, ApiError::Invalid(m) if m == "header.idempotency_key is 257 bytes; the limit is 256"),
            "{e:?}"
        );
        // 'é' is two bytes: 129 of them exceed 256 bytes.
        assert!(check("f", &"é".repeat(129), 256).is_err());
    }
}
