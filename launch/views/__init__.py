"""Reading a run for people: a consistent snapshot of the store (``snapshot``), the status
and an individual's lineage as plain data (``status``, ``lineage``), `evo report`'s data and
page (``report_data``, ``report_html``), matplotlib figures and architecture drawings
(``plotting``, ``drawing``), the launchers' progress line (``progress``) and the lines of
final trainings (``retrain_report``). Nothing here imports the commands or the clusters."""
