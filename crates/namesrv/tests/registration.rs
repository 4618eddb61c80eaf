//! Brokers registering, leaving, expiring and coming back, over real TCP.

mod common;

use std::collections::BTreeMap;

use common::{eventually, ids, perms, start, Broker, TIMEOUT};
use remoting::headers::{CommandHeader, RegisterBrokerResponseHeader};

#[tokio::test]
async fn master_and_slave_route_and_unregister_takes_write_permission() {
    let ts = start(&[]).await;
    let (master_client, slave_client) = (common::client(), common::client());
    let master = Broker::new("b1", 0, "127.0.0.1:10911");
    let slave = Broker::new("b1", 1, "127.0.0.1:10921");

    let resp = master_client
        .invoke_namesrv(&ts.addr, master.register(&[("T", 6)], 1), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    assert!(resp.body.is_empty());
    let resp = slave_client
        .invoke_namesrv(&ts.addr, slave.register(&[("T", 6)], 1), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    let h = RegisterBrokerResponseHeader::from_command(&resp).unwrap();
    assert_eq!(h.master_addr.as_deref(), Some("127.0.0.1:10911"));
    assert_eq!(h.ha_server_addr.as_deref(), Some("127.0.0.1:10911-ha"));

    let r = ts.route("T").await.unwrap();
    assert_eq!(
        r.broker_datas[0].broker_addrs,
        BTreeMap::from([(0, master.addr.clone()), (1, slave.addr.clone())])
    );
    assert_eq!(perms(&r), [6]);

    let resp = master_client
        .invoke_namesrv(&ts.addr, master.unregister(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    let r = ts.route("T").await.unwrap();
    assert_eq!(
        r.broker_datas[0].broker_addrs,
        BTreeMap::from([(1, slave.addr.clone())])
    );
    assert_eq!(perms(&r), [4], "a group without master is read-only");

    let resp = master_client
        .invoke_namesrv(&ts.addr, master.register(&[("T", 6)], 1), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    assert_eq!(
        perms(&ts.route("T").await.unwrap()),
        [6],
        "write permission is back"
    );
    ts.stop().await;
}

#[tokio::test]
async fn expired_master_loses_write_permission_until_it_registers_again() {
    let ts = start(&[
        ("brokerChannelExpiredTime", "300"),
        ("scanNotActiveBrokerInterval", "20"),
    ])
    .await;
    let master = Broker::new("b1", 0, "127.0.0.1:10911");
    let mut slave = Broker::new("b1", 1, "127.0.0.1:10921");
    slave.heartbeat_timeout_millis = Some(60_000);
    for req in [
        master.register(&[("T", 6)], 1),
        slave.register(&[("T", 6)], 1),
    ] {
        assert_eq!(ts.call(req).await.code, 0);
    }
    assert_eq!(perms(&ts.route("T").await.unwrap()), [6]);

    let r = eventually("the master's registration to expire", || async {
        ts.route("T").await.filter(|r| perms(r) == [4])
    })
    .await;
    assert_eq!(ids(&r.broker_datas[0]), [1]);

    assert_eq!(ts.call(master.register(&[("T", 6)], 1)).await.code, 0);
    let r = ts.route("T").await.unwrap();
    assert_eq!(perms(&r), [6]);
    assert!(r.broker_datas[0].broker_addrs.contains_key(&0));
    ts.stop().await;
}

#[tokio::test]
async fn closing_the_masters_connection_removes_it() {
    let ts = start(&[]).await;
    let (master_client, slave_client) = (common::client(), common::client());
    let master = Broker::new("b1", 0, "127.0.0.1:10911");
    let slave = Broker::new("b1", 1, "127.0.0.1:10921");
    master_client
        .invoke_namesrv(&ts.addr, master.register(&[("T", 6)], 1), TIMEOUT)
        .await
        .unwrap();
    slave_client
        .invoke_namesrv(&ts.addr, slave.register(&[("T", 6)], 1), TIMEOUT)
        .await
        .unwrap();
    master_client.shutdown().await;
    let r = eventually("the master to be removed", || async {
        ts.route("T")
            .await
            .filter(|r| !r.broker_datas[0].broker_addrs.contains_key(&0))
    })
    .await;
    assert_eq!(perms(&r), [4]);
    assert_eq!(ts.groups(), ["b1"]);
    ts.stop().await;
}

#[tokio::test]
async fn acting_master_lists_the_lowest_slave_as_broker_zero() {
    let ts = start(&[]).await;
    let mut brokers = vec![
        Broker::new("b1", 0, "127.0.0.1:10911"),
        Broker::new("b1", 2, "127.0.0.1:10931"),
        Broker::new("b1", 1, "127.0.0.1:10921"),
    ];
    for b in &mut brokers {
        b.enable_acting_master = Some(true);
        let resp = ts.call(b.register(&[("T", 6)], 1)).await;
        assert_eq!(resp.code, 0);
    }
    let r = ts.route("T").await.unwrap();
    assert!(r.broker_datas[0].enable_acting_master);
    assert_eq!(r.broker_datas[0].broker_addrs[&0], "127.0.0.1:10911");

    ts.call(brokers[0].unregister()).await;
    let r = ts.route("T").await.unwrap();
    let group = &r.broker_datas[0];
    assert!(group.enable_acting_master);
    assert_eq!(
        group.broker_addrs,
        BTreeMap::from([
            (0, "127.0.0.1:10921".to_string()),
            (2, "127.0.0.1:10931".to_string())
        ])
    );
    assert_eq!(perms(&r), [4], "an acting master is read-only");

    // Cluster info keeps the real ids.
    let info = ts.server.route_info().cluster_info();
    assert_eq!(ids(&info.broker_addr_table["b1"]), [1, 2]);

    // The NameServer option switches it off.
    let update = remoting::RemotingCommand::request(remoting::RequestCode::UPDATE_NAMESRV_CONFIG)
        .with_body("supportActingMaster=false\n");
    assert_eq!(ts.call(update).await.code, 0);
    let r = ts.route("T").await.unwrap();
    assert!(!r.broker_datas[0].broker_addrs.contains_key(&0));
    ts.stop().await;
}

#[tokio::test]
async fn bad_crc_and_missing_fields_are_refused() {
    let ts = start(&[]).await;
    let mut req = Broker::new("b1", 0, "127.0.0.1:10911").register(&[("T", 6), ("U", 6)], 1);
    req.ext_fields.insert("bodyCrc32".into(), "12345".into());
    let resp = ts.call(req).await;
    assert_eq!((resp.code, resp.remark_str()), (1, "crc32 not match"));

    let mut req = Broker::new("b1", 0, "127.0.0.1:10911").register(&[("T", 6), ("U", 6)], 1);
    req.ext_fields.remove("brokerName");
    let resp = ts.call(req).await;
    assert_eq!(resp.code, 1);
    assert!(
        resp.remark_str().contains("brokerName"),
        "{}",
        resp.remark_str()
    );

    // A single-topic registration before the first full one fails, as upstream.
    let req = Broker::new("b1", 0, "127.0.0.1:10911").register(&[], 1);
    let resp = ts.call(req).await;
    assert_eq!(resp.code, 1);
    assert!(resp.remark_str().starts_with("register broker failed"));
    assert!(ts.groups().is_empty());
    ts.stop().await;
}

#[tokio::test]
async fn compressed_registration_body() {
    let ts = start(&[]).await;
    let broker = Broker::new("b1", 0, "127.0.0.1:10911");
    let mut req = broker.register(&[("T", 6), ("U", 7)], 1);
    let body: remoting::protocol::RegisterBrokerBody =
        remoting::protocol::from_fastjson(&req.body).unwrap();
    let deflated = body.encode(true).unwrap();
    req.ext_fields.insert("compressed".into(), "true".into());
    req.ext_fields.insert(
        "bodyCrc32".into(),
        common::namesrv_crc(&deflated).to_string(),
    );
    req.body = deflated.into();
    let resp = ts.call(req).await;
    assert_eq!(resp.code, 0, "{}", resp.remark_str());
    assert_eq!(perms(&ts.route("U").await.unwrap()), [7]);
    ts.stop().await;
}
