//! Acceptance 1: Modbus TCP and RTU devices (an independent pymodbus peer; RTU over a
//! socat pty pair) polled per a register map covering every data type and word order;
//! the decoded values arrive in the cloud store.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// (type, registers, value) covering signs, extremes and fractions.
fn typed_values() -> Vec<(&'static str, u16, Value)> {
    vec![
        ("u16", 1, json!(54321)),
        ("i16", 1, json!(-1234)),
        ("u32", 2, json!(4_000_000_001u64)),
        ("i32", 2, json!(-2_000_000_002i64)),
        ("u64", 4, json!(0xFEDC_BA98_7654_3210u64)),
        ("i64", 4, json!(-9_000_000_000_000_000_001i64)),
        ("f32", 2, json!(-1234.5)),
        ("f64", 4, json!(-6.02214076e23)),
    ]
}

/// The points of one unit: every type in every order, strings, a bit, coils, inputs.
fn points(unit: u8) -> Vec<Value> {
    let mut pts = Vec::new();
    let mut addr = 0u16;
    for (ty, width, v) in typed_values() {
        for order in ["ABCD", "CDAB", "BADC", "DCBA"] {
            pts.push(
                json!({"unit": unit, "table": "hr", "address": addr, "type": ty, "order": order,
                            "value": v, "name": format!("{ty}_{}", order.to_lowercase())}),
            );
            addr += width + 1; // a one-register hole between points: the planner bridges it
        }
    }
    pts.push(json!({"unit": unit, "table": "ir", "address": 10, "type": "string", "length": 5, "order": "ABCD",
                    "value": "SN-4711", "name": "serial"}));
    pts.push(json!({"unit": unit, "table": "ir", "address": 20, "type": "string", "length": 3, "order": "BADC",
                    "value": "FW2.1", "name": "firmware"}));
    pts.push(json!({"unit": unit, "table": "ir", "address": 30, "type": "u16", "value": 2305, "name": "scaled",
                    "scale": 0.1, "offset": -30.0}));
    pts.push(json!({"unit": unit, "table": "hr", "address": 500, "type": "bit", "bit": 3, "value": true, "name": "bit3"}));
    pts.push(json!({"unit": unit, "table": "hr", "address": 500, "type": "bit", "bit": 4, "value": false, "name": "bit4"}));
    pts.push(json!({"unit": unit, "table": "co", "address": 7, "type": "bool", "value": true, "name": "coil7"}));
    pts.push(json!({"unit": unit, "table": "di", "address": 9, "type": "bool", "value": true, "name": "input9"}));
    pts
}

fn device_toml(name: &str, unit: u8, pts: &[Value]) -> String {
    let mut s =
        format!("[[bus.device]]\nname = \"{name}\"\nunit = {unit}\npoll_interval = \"300ms\"\n\n");
    for p in pts {
        let function = match p["table"].as_str().unwrap() {
            "hr" => "holding_register",
            "ir" => "input_register",
            "co" => "coil",
            _ => "discrete_input",
        };
        s += &format!(
            "[[bus.device.point]]\nname = \"{}\"\nfunction = \"{function}\"\naddress = {}\ntype = \"{}\"\n",
            p["name"].as_str().unwrap(),
            p["address"],
            p["type"].as_str().unwrap()
        );
        for key in ["order", "length", "bit", "scale", "offset"] {
            if let Some(v) = p.get(key) {
                s += &format!("{key} = {v}\n");
            }
        }
        s += "\n";
    }
    s
}

/// The value the cloud must hold for a point: the peer's value, scaled.
fn expected(p: &Value) -> Value {
    match (p.get("scale"), p.get("offset")) {
        (Some(s), Some(o)) => {
            json!(p["value"].as_f64().unwrap() * s.as_f64().unwrap() + o.as_f64().unwrap())
        }
        _ => p["value"].clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_order_over_tcp_and_rtu_reaches_the_cloud() {
    let (dir, cloud) = Cloud::with_device("site-gw").await;
    let d = dir.path();

    let tcp_points = points(1);
    let (rtu2, rtu3) = (points(2), points(3)[..6].to_vec());
    let (_tcp_peer, port) = modbus_peer_tcp(&Value::Array(tcp_points.clone()), d);
    let (_socat, tty_dev, tty_gw) = serial_pair(d);
    let mut rtu_all = rtu2.clone();
    rtu_all.extend(rtu3.clone());
    let _rtu_peer = modbus_peer_rtu(&Value::Array(rtu_all), d, &tty_dev);

    let buses = format!(
        "[[bus]]\nname = \"lan\"\ntcp = {{ address = \"127.0.0.1:{port}\" }}\n\n{}\n\
         [[bus]]\nname = \"rs485\"\nrtu = {{ port = \"{}\", baud = 9600 }}\ntimeout = \"500ms\"\n\n{}\n{}",
        device_toml("meter", 1, &tcp_points),
        tty_gw.display(),
        device_toml("unit2", 2, &rtu2),
        device_toml("unit3", 3, &rtu3),
    );
    let cfg = gateway_config(d, "site-gw", &[cloud.addr.to_string()], "", &buses);
    let check = fieldgate_cmd()
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _gw = gateway(&cfg);

    let want: BTreeMap<String, Value> =
        [("meter", &tcp_points), ("unit2", &rtu2), ("unit3", &rtu3)]
            .iter()
            .flat_map(|(dev, pts)| {
                pts.iter().map(move |p| {
                    (
                        format!("{dev}/{}", p["name"].as_str().unwrap()),
                        expected(p),
                    )
                })
            })
            .collect();
    let mut latest: BTreeMap<String, (Value, String)> = BTreeMap::new();
    wait_for("every point in the cloud", Duration::from_secs(60), || {
        for r in cloud.rows("site-gw") {
            latest.insert(r.point.clone(), (r.value.clone(), r.quality.clone()));
        }
        want.keys()
            .all(|k| latest.get(k).is_some_and(|(_, q)| q == "good"))
    });
    for (point, value) in &want {
        let (got, quality) = &latest[point];
        assert_eq!(quality, "good", "{point}");
        match (got.as_f64(), value.as_f64()) {
            (Some(g), Some(w)) if value.is_f64() => assert!(
                (g - w).abs() <= w.abs() * 1e-12,
                "{point}: {got} != {value}"
            ),
            _ => assert_eq!(got, value, "{point}"),
        }
    }
}
