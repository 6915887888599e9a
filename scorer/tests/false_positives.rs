//! The sessions training leaves out: those of threats analysts closed as false positives in
//! Postgres (real server, throwaway database), and none from a database without that table.

use scorer::train::false_positive_sessions;

#[tokio::test]
async fn closed_false_positives_are_named_and_a_missing_table_names_none() {
    let db = testkit::TestDatabase::create().await.expect("postgres");
    assert!(false_positive_sessions(db.url()).await.unwrap().is_empty());

    let (client, connection) = tokio_postgres::connect(db.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE threat_logs (id TEXT PRIMARY KEY, session_id TEXT, status TEXT, close_reason TEXT);
             INSERT INTO threat_logs VALUES
               ('t1', 's-fp', 'closed', 'false_positive'),
               ('t2', 's-fp', 'closed', 'false_positive'),
               ('t3', 's-real', 'closed', 'resolved'),
               ('t4', 's-open', 'open', NULL);",
        )
        .await
        .unwrap();
    let excluded = false_positive_sessions(db.url()).await.unwrap();
    assert_eq!(
        excluded.into_iter().collect::<Vec<_>>(),
        vec!["s-fp".to_string()]
    );
}
