-- The embedded mode's sample replay. Its first start replays the bundled captures moved in time
-- so that each begins then (a new installation's dashboard shows live traffic, not a recording's
-- date); that time is kept here so every later start replays the very same sessions (their ids
-- hash their start time) and changes nothing.
CREATE TABLE sample_replays (
    samples        TEXT PRIMARY KEY,
    replay_at_ns   BIGINT NOT NULL,
    first_replay   TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
