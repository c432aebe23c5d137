"""What the studies measured, read back: intervals and verdicts, each study's report (comparison, synth,
transfer), the per-example record, plots and colours."""
