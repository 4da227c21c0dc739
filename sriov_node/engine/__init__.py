"""The engine: observe -> resolve -> compare -> plan -> execute -> verify, one run at a time.

`reconcile.reconcile(host, desired)` is the one entry; `survey.survey` is the read-only half
(what `status`, `validate` and the views share). Imports: `host/`, `config`, `model`, `errors`,
`files`; never `cli/`, `service/`, `views/` (but for the device-plugin file a converged run writes).
"""
