//! Acceptance 2: 200 scattered points are read in the minimum number of requests for the
//! configured max gap; an illegal-address exception inside a block marks only that point
//! bad, and later rounds still read the rest in merged requests.

mod common;
use fieldgate::config::GatewayConfig;
use fieldgate::field::modbus::poller::BusPoller;
use fieldgate::field::modbus::sim::{SimMap, SimService};
use fieldgate::sample::Quality;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const MAX_GAP: u32 = 4;

/// 200 points at pseudo-random addresses (fixed seed), widths 1, 2 or 4, no overlaps.
fn scattered() -> Vec<(u16, u16, &'static str)> {
    let mut x: u64 = 0x5eed;
    let mut addr: u32 = 0;
    (0..200)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let (width, ty) = [(1, "u16"), (2, "f32"), (4, "f64")][(x >> 40) as usize % 3];
            addr += ((x >> 20) % 7) as u32; // gaps of 0 to 6 registers
            let a = addr;
            addr += width as u32;
            (a as u16, width, ty)
        })
        .collect()
}

/// Minimum number of requests, computed independently of the planner: a new request
/// starts exactly when the next point would break the gap or the 125-register limit.
fn minimum_requests(points: &[(u16, u16, &str)]) -> usize {
    let mut n = 0;
    let (mut start, mut end) = (0u32, 0u32);
    for &(a, w, _) in points {
        let (a, e) = (a as u32, a as u32 + w as u32);
        if n == 0 || a > end + MAX_GAP || e - start > 125 {
            n += 1;
            start = a;
        }
        end = e;
    }
    n
}

fn gateway_toml(points: &[(u16, u16, &str)], port: u16, extra_point: Option<u16>) -> String {
    let mut s = format!(
        "[gateway]\ndevice_id = \"gw\"\n[uplink]\nbrokers = [\"127.0.0.1:1\"]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n\
         [[bus]]\nname = \"lan\"\ntcp = {{ address = \"127.0.0.1:{port}\" }}\n\
         [[bus.device]]\nname = \"dev\"\npoll_interval = \"200ms\"\nmax_gap = {MAX_GAP}\n"
    );
    for (i, (a, _, ty)) in points.iter().enumerate() {
        s += &format!("[[bus.device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {a}\ntype = \"{ty}\"\n");
    }
    if let Some(a) = extra_point {
        s += &format!("[[bus.device.point]]\nname = \"missing\"\nfunction = \"holding_register\"\naddress = {a}\ntype = \"u16\"\n");
    }
    s
}

/// The device: every point, and zeros in the gaps between them (as most devices answer
/// for unmapped registers inside their range) except at `hole`.
fn sim_map(points: &[(u16, u16, &str)], hole: Option<u16>) -> SimMap {
    let mut s = String::from("[[device]]\nunit = 1\n");
    let mut next = 0u16;
    for (i, (a, w, ty)) in points.iter().enumerate() {
        s += &format!("[[device.point]]\nname = \"p{i}\"\nfunction = \"holding_register\"\naddress = {a}\ntype = \"{ty}\"\nvalue = {i}\n");
        for g in next..*a {
            if Some(g) != hole {
                s += &format!("[[device.point]]\nname = \"fill{g}\"\nfunction = \"holding_register\"\naddress = {g}\ntype = \"u16\"\nvalue = 0\n");
            }
        }
        next = a + w;
    }
    toml::from_str(&s).unwrap()
}

/// Runs the poller for `rounds` rounds; returns requests per round (after the first
/// round) and the last sample of each point.
async fn poll(
    cfg_text: &str,
    service: SimService,
    rounds: u32,
) -> (
    Vec<u64>,
    std::collections::HashMap<String, fieldgate::sample::Sample>,
    fieldgate::field::modbus::poller::DeviceStatus,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = service.requests.clone();
    let server = tokio::spawn(fieldgate::field::modbus::sim::serve_tcp_with(
        service, listener,
    ));
    let cfg = GatewayConfig::parse(
        &cfg_text.replace("@PORT@", &port.to_string()),
        Path::new("t.toml"),
    )
    .unwrap();
    let status = fieldgate::field::modbus::poller::BusStatus::default();
    let poller = BusPoller::new(
        cfg.bus[0].get_ref(),
        status.clone(),
        common::always_synced(),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let stop = CancellationToken::new();
    let task = tokio::spawn(poller.run(tx, stop.clone()));
    let mut per_round = Vec::new();
    let mut last = std::collections::HashMap::new();
    for _ in 0..rounds {
        let before = requests.load(Ordering::SeqCst);
        let batch: Vec<fieldgate::buffer::Entry> =
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
        per_round.push(requests.load(Ordering::SeqCst) - before);
        for fieldgate::buffer::Entry { sample: s, .. } in batch {
            last.insert(s.point.clone(), s);
        }
    }
    stop.cancel();
    let _ = task.await;
    server.abort();
    let device = status.lock().unwrap()["dev"].clone();
    (per_round[1..].to_vec(), last, device)
}

#[tokio::test]
async fn scattered_points_take_the_minimum_number_of_requests() {
    let points = scattered();
    let min = minimum_requests(&points);
    assert!(
        min > 5 && min < 100,
        "the fixture should need a few dozen requests, not {min}"
    );
    let cfg = gateway_toml(&points, 0, None).replace("127.0.0.1:0", "127.0.0.1:@PORT@");
    let (rounds, last, _) = poll(
        &cfg,
        SimService::new(&sim_map(&points, None), false).unwrap(),
        4,
    )
    .await;
    for r in &rounds {
        assert_eq!(
            *r as usize, min,
            "requests per round {rounds:?}, minimum {min}"
        );
    }
    assert_eq!(last.len(), 200);
    for (i, _) in points.iter().enumerate() {
        let s = &last[&format!("dev/p{i}")];
        assert_eq!(s.quality, Quality::Good);
        assert_eq!(s.value.as_f64(), Some(i as f64));
    }
    println!("200 scattered points: {min} requests per round (one per point would be 200)");
}

#[tokio::test]
async fn an_illegal_address_inside_a_block_marks_only_that_point() {
    let points = scattered();
    // A point the device does not have, inside the address range of the first block.
    let hole = points[1].0 - 1;
    assert!(!points.iter().any(|p| p.0 <= hole && hole < p.0 + p.1));
    let cfg = gateway_toml(&points, 0, Some(hole)).replace("127.0.0.1:0", "127.0.0.1:@PORT@");
    let (rounds, last, device) = poll(
        &cfg,
        SimService::new(&sim_map(&points, Some(hole)), false).unwrap(),
        4,
    )
    .await;
    assert_eq!(last["dev/missing"].quality, Quality::Exception(2));
    // The status says the device answers and names the one failing point, not a
    // failing device.
    use fieldgate::field::modbus::poller::DeviceState;
    assert_eq!(device.state, DeviceState::PointsFailing, "{device:?}");
    assert!(device.last_ok_ns.is_some(), "{device:?}");
    assert_eq!(device.errors, 0, "{device:?}");
    assert_eq!(device.last_error, None, "{device:?}");
    assert_eq!(
        device.failing_points.keys().collect::<Vec<_>>(),
        ["dev/missing"],
        "{device:?}"
    );
    assert_eq!(device.isolated_points, ["dev/missing"]);
    for (i, _) in points.iter().enumerate() {
        assert_eq!(last[&format!("dev/p{i}")].quality, Quality::Good, "p{i}");
    }
    // After the first round the bad address is read alone and the rest stay merged: the
    // minimum plus the isolated point, plus at most one split where it sat.
    let min = minimum_requests(&points);
    for r in &rounds {
        assert!(
            (*r as usize) <= min + 2 && (*r as usize) > min,
            "requests per round {rounds:?}, minimum {min}"
        );
    }
}
