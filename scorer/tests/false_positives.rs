//! The sessions training leaves out: those of threats analysts closed as true or false
//! positives in Postgres (real server, throwaway database), and none from a database without
//! that table.

use scorer::train::judged_sessions;

#[tokio::test]
async fn closed_true_and_false_positives_are_named_and_a_missing_table_names_none() {
    let db = testkit::TestDatabase::create().await.expect("postgres");
    assert!(judged_sessions(db.url()).await.unwrap().is_empty());

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
               ('t3', 's-attack', 'closed', 'true_positive'),
               ('t4', 's-dup', 'closed', 'duplicate'),
               ('t5', 's-open', 'open', NULL);",
        )
        .await
        .unwrap();
    let mut excluded: Vec<String> = judged_sessions(db.url())
        .await
        .unwrap()
        .into_iter()
        .collect();
    excluded.sort();
    assert_eq!(excluded, vec!["s-attack".to_string(), "s-fp".to_string()]);
}
