-- Initial telemetry schema: a counter that proves the file ran exactly once.
CREATE TABLE telemetry.applied (file text PRIMARY KEY, runs integer NOT NULL);
ALTER TABLE telemetry.applied OWNER TO app;
INSERT INTO telemetry.applied VALUES ('telemetry_schema.sql', 1)
  ON CONFLICT (file) DO UPDATE SET runs = telemetry.applied.runs + 1;
