//! One serial line, several units: a unit that stops answering is backed off so the
//! others on the line keep their poll rate.

mod common;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_unit_does_not_starve_its_neighbours() {
    let (dir, cloud) = Cloud::with_device("gw-line").await;
    let d = dir.path();
    let (_socat, dev_end, gw_end) = serial_pair(d);
    let _sim = sim_serial(d, &dev_end, &[(1, 5)]);
    let point = |n: &str| {
        format!("[[bus.device.point]]\nname = \"{n}\"\nfunction = \"holding_register\"\naddress = 0\ntype = \"u16\"\n")
    };
    let buses = format!(
        "[[bus]]\nname = \"rs485\"\nrtu = {{ port = \"{}\" }}\ntimeout = \"300ms\"\nretries = 1\n\
         [[bus.device]]\nname = \"alive\"\nunit = 1\npoll_interval = \"100ms\"\n{}\
         [[bus.device]]\nname = \"dead\"\nunit = 9\npoll_interval = \"100ms\"\n{}",
        gw_end.display(),
        point("v"),
        point("v"),
    );
    let cfg = gateway_config(d, "gw-line", &[cloud.addr.to_string()], "", &buses);
    let _gw = gateway(&cfg);
    // Let the backoff of the dead unit build up, then count the live unit's polls.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls = |s: &serde_json::Value| s["devices"]["alive"]["polls"].as_u64().unwrap_or(0);
    let before = polls(&status(d).unwrap());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let st = status(d).unwrap();
    let rate = (polls(&st) - before) as f64 / 4.0;
    let dead = &st["devices"]["dead"];
    assert!(
        dead["last_error"].as_str().unwrap().contains("no answer"),
        "{dead}"
    );
    // Without backoff every round would wait 2 x 300 ms for the dead unit: ~1.5 polls/s.
    assert!(
        rate > 3.0,
        "the live unit was polled {rate:.1} times/s (nominal 10)"
    );
    println!(
        "live unit: {rate:.1} polls/s beside a dead unit (nominal 10); dead unit polled {} times",
        dead["polls"]
    );
}
