//! Kafka's rules for topic names (org.apache.kafka.common.internals.Topic).

use crate::error::ControllerError;

/// Longest legal topic name: 255 minus room for the partition suffix and ".deleted".
pub(crate) const MAX_NAME_LENGTH: usize = 249;

/// Checks `name` against Kafka's topic-name rules (INVALID_TOPIC_EXCEPTION when broken).
pub fn validate(name: &str) -> Result<(), ControllerError> {
    if name.is_empty() {
        return Err(ControllerError::InvalidTopic(
            "Topic name is illegal, it can't be empty".into(),
        ));
    }
    if name == "." || name == ".." {
        return Err(ControllerError::InvalidTopic(
            "Topic name cannot be \".\" or \"..\"".into(),
        ));
    }
    if name.len() > MAX_NAME_LENGTH {
        return Err(ControllerError::InvalidTopic(format!(
            "Topic name is illegal, it can't be longer than {MAX_NAME_LENGTH} characters, topic name: {name}"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(ControllerError::InvalidTopic(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"
        )));
    }
    Ok(())
}

/// The name with '.' and '_' unified: two topics whose unified names are equal would collide
/// in metric names, so Kafka refuses the second.
pub(crate) fn unify_collision_chars(name: &str) -> String {
    name.replace('.', "_")
}

/// Whether the name contains a character that may collide.
pub(crate) fn has_collision_chars(name: &str) -> bool {
    name.contains(['.', '_'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_and_illegal_names() {
        assert!(validate("orders-v1.eu_west").is_ok());
        assert!(validate(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "a b", "ünïcode", "a/b", "a\0"] {
            assert_eq!(validate(bad).map_err(|e| e.code()), Err(17), "{bad:?}");
        }
        assert_eq!(validate(&"a".repeat(250)).map_err(|e| e.code()), Err(17));
    }

    #[test]
    fn collisions() {
        assert_eq!(unify_collision_chars("a.b_c"), "a_b_c");
        assert!(has_collision_chars("a.b"));
        assert!(!has_collision_chars("ab"));
    }
}
