//! The ingest's watch on devices: a device connecting from a network it never used
//! (IPv4 /24, IPv6 /48) and a device whose live data rate is far off its normal raise
//! security events for the tenant that owns it (docs/iam.md).
//!
//! The rate counts live samples only (taken within two minutes of arrival): a gateway
//! draining its buffer after an outage sends old samples fast, and that is not news.

use super::iam::audit::{raise, SecurityEvent};
use crate::args;
use crate::cloud::sql::{DbError, Exec};
use std::net::IpAddr;

/// Serializes the rate's read-and-update across ingest workers sharing PostgreSQL.
pub const RATE_LOCK: i64 = 0x7261_7465;

/// Minutes of history before a rate counts as normal.
pub const WARM_UP_MINUTES: i64 = 5;
/// How far off (either way) a minute must be to raise an event.
pub const RATE_FACTOR: f64 = 10.0;
/// A sample is live when taken at most this long before it arrived.
pub const LIVE_NS: i64 = 120_000_000_000;

const MINUTE_NS: i64 = 60_000_000_000;

/// The network an address belongs to, for this watch.
pub fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network_of(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    }
}

fn tenant_of(db: &mut dyn Exec, device: &str) -> Result<String, DbError> {
    match db.query_opt(
        "SELECT tenant FROM devices WHERE device = $1",
        args![device],
    )? {
        Some(r) => Ok(r.opt_text(0)?.unwrap_or_default()),
        None => Ok(String::new()),
    }
}

fn event(
    db: &mut dyn Exec,
    device: &str,
    source: &str,
    kind: &str,
    detail: String,
    now_ns: i64,
) -> Result<(), DbError> {
    let tenant = tenant_of(db, device)?;
    raise(
        db,
        &SecurityEvent {
            id: 0,
            ts_ns: now_ns,
            tenant,
            kind: kind.into(),
            actor: format!("device:{device}"),
            source: source.into(),
            detail,
        },
    )
}

/// A device connected from `peer`.
pub fn connected(
    db: &mut dyn Exec,
    device: &str,
    peer: IpAddr,
    now_ns: i64,
) -> Result<(), DbError> {
    let network = network_of(peer);
    let known = db
        .query(
            "SELECT network FROM device_networks WHERE device = $1 ORDER BY first_ns",
            args![device],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<Vec<_>, _>>()?;
    if !known.is_empty() && !known.contains(&network) {
        event(
            db,
            device,
            &peer.to_string(),
            "device_new_network",
            format!(
                "{device} connected from {network}, a network it never used (before: {})",
                known.join(", ")
            ),
            now_ns,
        )?;
    }
    db.execute(
        "INSERT INTO device_networks(device, network, first_ns, last_ns) VALUES ($1, $2, $3, $3)
         ON CONFLICT(device, network) DO UPDATE SET last_ns = excluded.last_ns",
        args![device, network, now_ns],
    )?;
    Ok(())
}

/// A device sent `live` live samples at `now_ns`.
/// Several ingest workers may call it for one device at once: run it serialized
/// (`Db::serialized` with `RATE_LOCK`) where they share a database.
pub fn samples(db: &mut dyn Exec, device: &str, live: u64, now_ns: i64) -> Result<(), DbError> {
    let minute = now_ns.div_euclid(MINUTE_NS);
    let row = db.query_opt(
        "SELECT minute, count, normal, minutes FROM device_rates WHERE device = $1",
        args![device],
    )?;
    let Some(row) = row else {
        db.execute(
            "INSERT INTO device_rates(device, minute, count, normal, minutes) VALUES ($1, $2, $3, NULL, 0)",
            args![device, minute, live as i64],
        )?;
        return Ok(());
    };
    let (at, count, minutes) = (row.int(0)?, row.int(1)?, row.int(3)?);
    let normal = row.opt_real(2)?;
    if at >= minute {
        db.execute(
            "UPDATE device_rates SET count = count + $2 WHERE device = $1",
            args![device, live as i64],
        )?;
        return Ok(());
    }
    // The minute `at` is complete: compare it with the normal, then learn from it (and
    // from the silent minutes after it, up to an hour of them).
    let finished = count as f64;
    if let Some(normal) = normal.filter(|n| *n > 0.0) {
        if minutes >= WARM_UP_MINUTES
            && (finished > normal * RATE_FACTOR || finished * RATE_FACTOR < normal)
        {
            event(
                db,
                device,
                "",
                "data_rate_anomaly",
                format!(
                    "{device} sent {count} live samples in a minute; its normal is about {normal:.0}"
                ),
                now_ns,
            )?;
        }
    }
    let mut learned = normal.unwrap_or(finished);
    learned = 0.8 * learned + 0.2 * finished;
    for _ in 1..(minute - at).min(60) {
        learned *= 0.8;
    }
    db.execute(
        "UPDATE device_rates SET minute = $2, count = $3, normal = $4, minutes = minutes + $5 WHERE device = $1",
        args![device, minute, live as i64, learned, (minute - at).min(60)],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cloud::sql::Db;

    fn db() -> Db {
        let db = Db::memory().unwrap();
        db.execute(
            "INSERT INTO devices(device, claim_hash, tenant, state, updated_ns) VALUES ('gw', x'00', 'acme', 'enrolled', 0)",
            &[],
        )
        .unwrap();
        db
    }

    fn kinds(db: &Db) -> Vec<String> {
        crate::cloud::iam::audit::security_events(db, Some("acme"))
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    #[test]
    fn networks_are_per_slash_24_and_48() {
        assert_eq!(network_of("192.0.2.77".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(
            network_of("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.0/24"
        );
        assert_eq!(
            network_of("2001:db8:7:1::5".parse().unwrap()),
            "2001:db8:7::/48"
        );
    }

    #[test]
    fn a_new_network_raises_an_event_for_the_owner() {
        let db = db();
        connected(&mut &db, "gw", "192.0.2.10".parse().unwrap(), 1).unwrap();
        connected(&mut &db, "gw", "192.0.2.99".parse().unwrap(), 2).unwrap();
        assert!(kinds(&db).is_empty(), "the first network and the same /24");
        connected(&mut &db, "gw", "198.51.100.4".parse().unwrap(), 3).unwrap();
        assert_eq!(kinds(&db), ["device_new_network"]);
        let e = &crate::cloud::iam::audit::security_events(&db, None).unwrap()[0];
        assert!(
            e.detail.contains("198.51.100.0/24") && e.detail.contains("192.0.2.0/24"),
            "{e:?}"
        );
        assert_eq!((e.actor.as_str(), e.tenant.as_str()), ("device:gw", "acme"));
        connected(&mut &db, "gw", "198.51.100.5".parse().unwrap(), 4).unwrap();
        assert_eq!(kinds(&db).len(), 1, "known now");
    }

    #[test]
    fn a_rate_far_off_its_normal_raises_an_event_after_warm_up() {
        let db = db();
        let t0 = 1_000 * MINUTE_NS;
        // Ten minutes at 60 samples a minute (one batch of 10 every 10 s).
        for m in 0..10 {
            for s in 0..6 {
                samples(&mut &db, "gw", 10, t0 + m * MINUTE_NS + s * 10_000_000_000).unwrap();
            }
        }
        // A minute at 60: normal. Then one at 6,000: far off.
        samples(&mut &db, "gw", 60, t0 + 10 * MINUTE_NS).unwrap();
        samples(&mut &db, "gw", 6_000, t0 + 11 * MINUTE_NS).unwrap();
        assert!(kinds(&db).is_empty(), "raised when the minute is complete");
        samples(&mut &db, "gw", 60, t0 + 12 * MINUTE_NS).unwrap();
        assert_eq!(kinds(&db), ["data_rate_anomaly"]);
        let e = &crate::cloud::iam::audit::security_events(&db, None).unwrap()[0];
        assert!(e.detail.contains("6000 live samples"), "{e:?}");
    }
}
