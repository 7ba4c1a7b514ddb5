"""The evaluation: EGES against simpler models on held-out splits of real data (``evaluate``),
the baselines (``baselines``), ranking metrics (``metrics``) and the report (``report``)."""
