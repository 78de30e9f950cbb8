-- The engine a version was trained on (issue #8): device ("cpu", "cuda:0") and precision
-- ("fp32", "bf16"). Empty for versions committed before this was recorded.
ALTER TABLE versions ADD COLUMN device TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN precision TEXT NOT NULL DEFAULT '';
