-- The head of the change log as one row. The writer numbers each batch's
-- change rows from it at the end of the batch, and the row's lock orders
-- those numbers by commit (see store::writer::log_changes). It is never
-- lowered: pruning the log does not give seqs back.
CREATE TABLE seq_head (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO seq_head (id, seq)
VALUES (1, MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0),
               COALESCE((SELECT MAX(seq) FROM changes), 0)));
