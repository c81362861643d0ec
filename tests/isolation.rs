//! Acceptance 5: a device certificate cannot write into another device's stream, and a
//! client without a certificate from the cloud's CA is refused.

mod common;
use common::*;
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_publish_into_another_devices_stream() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::start(&d.join("cloud")).await;
    cloud.dev_cert("gw-a", &d.join("a"));
    let (ca, cert, key) = (
        d.join("a/ca.crt"),
        d.join("a/device.crt"),
        d.join("a/device.key"),
    );

    // Control: A may write its own stream.
    let (client, mut ev) = mqtt_client(cloud.addr, "gw-a", &ca, Some((&cert, &key)));
    client
        .publish(
            "fg/v1/gw-a/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(1, "x/own", 1.0),
        )
        .await
        .unwrap();
    until_puback(&mut ev).await.expect("own topic accepted");
    assert_eq!(cloud.store().count("gw-a").unwrap(), 1);

    // A's certificate, B's topic, even with B's client id: the connection is closed.
    let (client, mut ev) = mqtt_client(cloud.addr, "gw-b", &ca, Some((&cert, &key)));
    client
        .publish(
            "fg/v1/gw-b/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(1, "x/forged", 66.0),
        )
        .await
        .unwrap();
    let r = until_puback(&mut ev).await;
    assert!(r.is_err(), "a foreign publish must not be acknowledged");
    assert_eq!(
        cloud.store().count("gw-b").unwrap(),
        0,
        "nothing is stored in B's stream"
    );
    let rejected = cloud.store().rejections(10).unwrap();
    assert!(
        rejected
            .iter()
            .any(|(dev, topic, reason)| dev.as_deref() == Some("gw-a")
                && topic == "fg/v1/gw-b/data"
                && reason.contains("outside")),
        "the attempt is recorded: {rejected:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_of_the_cloud_ca_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cloud = Cloud::start(&d.join("cloud")).await;
    // A second, unrelated CA issues a certificate with a valid-looking device id.
    let other = Cloud::start(&d.join("other")).await;
    other.dev_cert("gw-a", &d.join("rogue"));
    cloud.dev_cert("gw-a", &d.join("a"));
    let ca = d.join("a/ca.crt");

    let (client, mut ev) = mqtt_client(
        cloud.addr,
        "gw-a",
        &ca,
        Some((&d.join("rogue/device.crt"), &d.join("rogue/device.key"))),
    );
    client
        .publish(
            "fg/v1/gw-a/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(1, "x/rogue", 1.0),
        )
        .await
        .unwrap();
    let e = until_puback(&mut ev)
        .await
        .expect_err("a certificate of another CA is refused");
    println!("foreign CA: {e}");

    let (client, mut ev) = mqtt_client(cloud.addr, "gw-a", &ca, None);
    client
        .publish(
            "fg/v1/gw-a/data",
            QoS::AtLeastOnce,
            false,
            one_sample_batch(2, "x/anon", 1.0),
        )
        .await
        .unwrap();
    let e = until_puback(&mut ev)
        .await
        .expect_err("a client without a certificate is refused");
    println!("no certificate: {e}");
    assert_eq!(cloud.store().count("gw-a").unwrap(), 0);
}
