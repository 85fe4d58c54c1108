"""`l2b-mask-campaign`: reprocess many EMIT acquisitions with the L2B cloud-mask PGE on Dask.

One run configuration per acquisition is derived from a template and kept under the output
root; each PGE runs as its own subprocess on a Dask worker (a local cluster by default, Slurm
jobs, or an existing scheduler); finished products that still validate are skipped, so a rerun completes
only what is missing; a JSON and a CSV report record every acquisition's outcome.

Modules: `inventory` (what to process), `template` (run configurations), `products` (is a
product there and intact), `policy` (what to retry), `plan` (sizing the local cluster),
`worker` (the tasks that run on Dask workers), `journal` (every attempt, as its worker saw
it), `recovery` (the report of a driver that died, reconciled), `report` (report files and
live progress), `settings` (what a campaign run is asked), `cluster` (the Dask cluster),
`jobqueue` (Slurm jobs), `loop` (the submission window), `engine` (one campaign from settings
to report), `errors` (exit codes), `cli` (the command), `html_report` and `stac` (the
operators' page and the STAC Collection, rewritten with the report), `files` (files in the
output root, never through a link; whole-file rewrites by `l2b_mask.atomic_file`).
"""
