//! `gateway.device_id` from a stable fact of the hardware instead of the config, so one
//! image can be flashed onto many boxes:
//!
//! | value | id |
//! | --- | --- |
//! | `auto:serial` | the board's serial: DMI `product_serial` (x86), else the device tree's `serial-number` (ARM) |
//! | `auto:mac:IFACE` | `gw-` and the interface's MAC address without colons |
//! | `auto:machine-id` | `/etc/machine-id` (per installation, not per board) |
//!
//! Characters a device id may not hold become `-`.

const SERIAL_FILES: [&str; 2] = [
    "/sys/class/dmi/id/product_serial",
    "/proc/device-tree/serial-number",
];

fn read(path: &str) -> Result<String, String> {
    std::fs::read(path)
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                .to_string()
        })
        .map_err(|e| format!("cannot read {path}: {e}"))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect()
}

/// The id an `auto:` value stands for; None if `value` is a plain id.
pub fn resolve(value: &str) -> Option<Result<String, String>> {
    let what = value.strip_prefix("auto:")?;
    Some(match what.split_once(':') {
        None if what == "serial" => {
            let mut last = String::new();
            let found = SERIAL_FILES.iter().find_map(|f| match read(f) {
                Ok(s) if !s.is_empty() && !s.eq_ignore_ascii_case("not specified") => Some(s),
                Ok(_) => {
                    last = format!("{f} is empty");
                    None
                }
                Err(e) => {
                    last = e;
                    None
                }
            });
            found
                .map(|s| sanitize(&s))
                .ok_or_else(|| format!("no board serial number ({last}); use `auto:mac:eth0` or an explicit id"))
        }
        None if what == "machine-id" => read("/etc/machine-id").map(|s| sanitize(&s)),
        Some(("mac", iface)) if !iface.is_empty() && !iface.contains('/') => {
            read(&format!("/sys/class/net/{iface}/address"))
                .map(|m| format!("gw-{}", m.replace(':', "").to_ascii_lowercase()))
        }
        _ => Err(format!(
            "`{value}`: valid automatic ids are `auto:serial`, `auto:mac:IFACE` and `auto:machine-id`"
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_the_machine() {
        assert_eq!(resolve("plant1-gw01"), None);
        assert_eq!(resolve("auto:mac:lo"), Some(Ok("gw-000000000000".into())));
        assert!(resolve("auto:mac:nosuch0")
            .unwrap()
            .unwrap_err()
            .contains("cannot read /sys/class/net/nosuch0/address"));
        let id = resolve("auto:machine-id").unwrap().unwrap();
        assert!(crate::ids::DeviceId::parse(&id).is_ok(), "{id}");
        assert!(resolve("auto:guess")
            .unwrap()
            .unwrap_err()
            .contains("valid automatic ids"));
        assert_eq!(sanitize("SN 12/34"), "SN-12-34");
    }
}
