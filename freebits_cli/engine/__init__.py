"""The engine layer: one pack of runs trained as one batched model on one device.

`train` (the pack trainer), `step` (the fused training step and member-wise optimizers),
`objective` (free bits, annealing), `batches`, `metrics` and `scores` (held-out evaluation),
`samples`, `selection` (best-valid state), `pack_state` (members' RNG streams and checkpoint
records), `interrupt` (signals). May import: `spec`, `data`, `models`, `results`, `errors`.
Nothing is imported here: torch loads only when a command trains.
"""
