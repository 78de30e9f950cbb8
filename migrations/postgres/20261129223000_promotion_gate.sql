-- Promotion gate (issue #10): a per-model forgetting policy checked when a task's new
-- version has been evaluated. A version that violates it is kept but does not become head.

-- The model's gate as JSON ({"max_avg_forgetting": .., "min_union_rm": .., "max_rm_drop": ..});
-- NULL = no gate.
ALTER TABLE models ADD COLUMN gate_json TEXT;

-- Why the gate refused the version; NULL = accepted.
ALTER TABLE versions ADD COLUMN rejected_reason TEXT;

-- Copy of the refusal on the task that produced the version (the task still SUCCEEDED).
ALTER TABLE tasks ADD COLUMN rejected_reason TEXT;
