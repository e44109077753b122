"""The reconciler: one level-based pass (CronJob) or a watch loop. Never imports webhook."""
