//! The responder on the bus: threats in, decisions out on `vnc.decisions` keyed by decision id.
//! The same consumer reads `vnc.decisions` too, so analysts' blocks and unblocks (and the
//! responder's own decisions, read back without effect) keep the ban histories current. Every
//! decision is signed on its way out (an extension is signed anew: its `until` changed).

use std::time::Duration;

use bus::{Bus, Consumer, Outcome, Output, Record, RetryableError, Stage};
use schemas::topics::{DECISIONS, THREATS};
use schemas::{Decision, Threat};

use trust::DecisionSigner;

use crate::decide::Responder;

pub struct ResponderStage {
    responder: Responder,
    signer: DecisionSigner,
}

impl ResponderStage {
    pub fn new(responder: Responder, signer: DecisionSigner) -> Self {
        ResponderStage { responder, signer }
    }

    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    fn handle(&mut self, record: &Record) -> Outcome {
        if record.topic == DECISIONS.name {
            return match schemas::decode::<Decision>(&record.payload) {
                Ok(decision) => {
                    self.responder.observe(&decision);
                    Outcome::Emit(Vec::new())
                }
                Err(e) => Outcome::DeadLetter(format!("undecodable decision: {e}")),
            };
        }
        if record.topic != THREATS.name {
            return Outcome::DeadLetter(format!("unexpected topic {}", record.topic));
        }
        let threat = match schemas::decode::<Threat>(&record.payload) {
            Ok(threat) => threat,
            Err(e) => return Outcome::DeadLetter(format!("undecodable threat: {e}")),
        };
        let verdict = self.responder.decide(&threat, chrono::Utc::now());
        match verdict.decision() {
            Some(decision) => {
                let decision = self.signer.signed(decision.clone());
                match Output::encode(&DECISIONS, decision.decision_id.clone(), &decision) {
                    Ok(output) => Outcome::Emit(vec![output]),
                    Err(e) => Outcome::DeadLetter(format!("decision does not encode: {e}")),
                }
            }
            None => Outcome::Emit(Vec::new()),
        }
    }
}

impl Stage for ResponderStage {
    fn name(&self) -> &str {
        "responder"
    }

    async fn process(&mut self, batch: &[Record]) -> Result<Vec<Outcome>, RetryableError> {
        Ok(batch.iter().map(|record| self.handle(record)).collect())
    }
}

/// Rebuilds the ban histories from the decisions topic read from its beginning (a consumer
/// group of its own that commits nothing), until it has been quiet for `idle`. Returns the
/// number of decisions read.
pub async fn restore_history<B: Bus>(
    bus: &B,
    responder: &mut Responder,
    idle: Duration,
) -> Result<usize, bus::BusError> {
    let group = format!(
        "vncguard-responder-restore-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    );
    let mut consumer = bus.consumer(&group, &[DECISIONS.name])?;
    let mut read = 0;
    loop {
        let batch = consumer.next_batch(500, idle).await?;
        if batch.is_empty() {
            return Ok(read);
        }
        for record in &batch {
            match schemas::decode::<Decision>(&record.payload) {
                Ok(decision) => {
                    responder.observe(&decision);
                    read += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, offset = record.offset, "skipping an undecodable decision")
                }
            }
        }
    }
}
