//! The scoring stage takes a batch that mixes sessions, a model announcement and an
//! undecodable record: it scores the sessions between two model records as one forest batch,
//! and every outcome is the one scoring the records one at a time gives.

mod support;

use bus::{Outcome, Output, Record, Stage};
use schemas::topics::{MODELS, SESSIONS_ENRICHED, SESSIONS_SCORED};
use schemas::{EnrichedSession, ModelAnnouncement, ScoredSession};
use scorer::forest::ForestParams;
use scorer::model::{ModelStore, DEFAULT_MODEL_NAME};
use scorer::risk::RiskConfig;
use scorer::stage::ScoringStage;
use scorer::train::fit_sessions;
use support::record;

fn scored(outcome: &Outcome) -> Vec<ScoredSession> {
    match outcome {
        Outcome::Emit(outputs) => outputs
            .iter()
            .filter(|output| output.topic == SESSIONS_SCORED.name)
            .map(|output| schemas::decode(&output.payload).unwrap())
            .collect(),
        Outcome::DeadLetter(reason) => panic!("dead letter: {reason}"),
    }
}

#[tokio::test]
async fn sessions_between_model_records_are_scored_as_a_batch_like_one_at_a_time() {
    let sessions: Vec<EnrichedSession> = ["a_normal_vncauth", "c_bruteforce_vncauth", "e_scanner"]
        .iter()
        .flat_map(|name| support::enrich_capture(name))
        .collect();
    let model = |seed| -> ModelAnnouncement {
        let params = ForestParams {
            seed,
            n_trees: 50,
            ..ForestParams::default()
        };
        let mut trained = fit_sessions(&sessions, DEFAULT_MODEL_NAME, &params).unwrap();
        trained.announcement.version = format!("v{seed}");
        trained.announcement
    };
    let (first, second) = (model(1), model(2));
    let session_record = |offset: usize| {
        let mut session = sessions[offset % sessions.len()].clone();
        session.event.event_id = offset.to_string();
        let key = session.event.summary.client_ip.clone();
        record(
            offset,
            Output::encode(&SESSIONS_ENRICHED, key, &session).unwrap(),
        )
    };

    // 15 sessions, the new model, 15 sessions, an undecodable record, 10 sessions: runs long
    // enough for the forest's batch path.
    let mut batch: Vec<Record> = (0..15).map(session_record).collect();
    batch.push(record(
        15,
        Output::encode(&MODELS, DEFAULT_MODEL_NAME, &second).unwrap(),
    ));
    batch.extend((16..31).map(session_record));
    let mut undecodable = session_record(31);
    undecodable.payload.truncate(5);
    batch.push(undecodable);
    batch.extend((32..42).map(session_record));

    let stage = |model: &ModelAnnouncement| {
        let mut models = ModelStore::new(DEFAULT_MODEL_NAME);
        assert!(models.apply(model).unwrap());
        ScoringStage::new(models, RiskConfig::default(), 10_000)
    };
    let mut batched = stage(&first);
    let outcomes = batched.process(&batch).await.unwrap();
    assert_eq!(outcomes.len(), batch.len(), "one outcome per record");
    assert!(matches!(&outcomes[15], Outcome::Emit(outputs) if outputs.is_empty()));
    assert!(
        matches!(&outcomes[31], Outcome::DeadLetter(reason) if reason.contains("enriched session"))
    );

    // The same records one at a time.
    let mut one_at_a_time = stage(&first);
    for (offset, record) in batch.iter().enumerate() {
        let expected = one_at_a_time
            .process(std::slice::from_ref(record))
            .await
            .unwrap()
            .remove(0);
        if offset == 15 || offset == 31 {
            continue;
        }
        let (got, expected) = (scored(&outcomes[offset]), scored(&expected));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].enriched.event.event_id, offset.to_string());
        let version = if offset < 15 { "v1" } else { "v2" };
        assert_eq!(got[0].model_version, version, "record {offset}");
        assert_eq!(
            got[0].anomaly_score, expected[0].anomaly_score,
            "record {offset}"
        );
        assert_eq!(got[0].risk_score, expected[0].risk_score, "record {offset}");
        assert_eq!(got[0].reasons, expected[0].reasons, "record {offset}");
    }
}
