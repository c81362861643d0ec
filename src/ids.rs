//! Checked names: a device id or a tenant name is validated once, where it enters (the
//! CLI, the config, an API body or path, a certificate's CN, a topic), and travels as its
//! own type after that, so nothing downstream has to check it again or can forget to.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A name that is not valid for what it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}: 1 to 64 characters of A-Z a-z 0-9 - _ .")]
pub struct BadName {
    pub what: &'static str,
    pub value: String,
}

/// 1 to 64 characters of `A-Z a-z 0-9 - _ .`: safe in topics, file names, URL paths and
/// certificate subjects.
fn valid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

macro_rules! checked_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// What it names, in error messages.
            pub const WHAT: &'static str = $what;

            pub fn parse(s: &str) -> Result<$name, BadName> {
                if valid(s) {
                    Ok($name(s.to_string()))
                } else {
                    Err(BadName {
                        what: $what,
                        value: s.to_string(),
                    })
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = BadName;
            fn try_from(s: String) -> Result<$name, BadName> {
                if valid(&s) {
                    Ok($name(s))
                } else {
                    Err(BadName { what: $what, value: s })
                }
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = BadName;
            fn from_str(s: &str) -> Result<$name, BadName> {
                $name::parse(s)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

checked_name!(
    /// A gateway's id: its certificate's CN, its topics' middle, its row key in the cloud.
    DeviceId,
    "device id"
);

checked_name!(
    /// A tenant's name, as it appears in API paths.
    TenantName,
    "tenant name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_where_they_are_made() {
        assert!(DeviceId::parse("gw-01.site_a").is_ok());
        for bad in ["", "a b", "a/b", "+", "#", "ä", &"x".repeat(65)] {
            let e = DeviceId::parse(bad).unwrap_err();
            assert_eq!(e.what, "device id");
            assert!(e.to_string().contains("not a valid device id"), "{e}");
        }
        assert_eq!(
            TenantName::parse("a b").unwrap_err().to_string(),
            "`a b` is not a valid tenant name: 1 to 64 characters of A-Z a-z 0-9 - _ ."
        );
        // Deserializing checks too.
        assert!(serde_json::from_str::<DeviceId>("\"gw/1\"").is_err());
        let d: DeviceId = serde_json::from_str("\"gw1\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"gw1\"");
    }
}
