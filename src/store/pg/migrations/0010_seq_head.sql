-- PostgreSQL twin of 0010_seq_head: the head of the change log as one row,
-- whose row lock orders each batch's seqs by commit, across writers (see
-- store::writer::log_changes). `changes.seq` keeps its identity default
-- only for databases older than this; the writer always gives seq itself.
CREATE TABLE seq_head (
    id  integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
);
INSERT INTO seq_head (id, seq) VALUES (1, COALESCE((SELECT MAX(seq) FROM changes), 0));
