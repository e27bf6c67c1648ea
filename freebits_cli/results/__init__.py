"""The results layer: what is on disk and how it is read.

`schema` (every column, file name, and which spec fields shape, place or only describe a run),
`storage` (run folders, atomic writes), `records` (epoch rows), `resume` (checkpoints),
`locks`, `sweep_folder` (one spec per sweep name), `reader` and `settings` (the tables the
report, export and the Python API read). May import: `spec`, `errors`; never torch at import.
"""
