"""The sweep layer: from a spec to trained runs on devices, processes, shards or Slurm.

`runs` (the plan), `executor` (packs, devices, the local run), `cost` (FLOPs and memory),
`cores` (threads and workers on a CPU), `trainers` (the registry of running sweeps),
`workers`, `pack_runner`, `cluster` and `queue` (Slurm), `dryrun`, `progress`.
May import: `spec`, `data`, `models`, `engine`, `results`, `errors`.
"""
