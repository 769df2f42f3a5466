-- Initial application schema (applied once by apes.infra.postgresql, recorded in apes_infra.init_sql).
CREATE TABLE app.customers (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE app.customers OWNER TO app;
INSERT INTO app.customers (name) VALUES ('first customer');
