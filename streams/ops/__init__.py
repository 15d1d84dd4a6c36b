"""Operations tools: backtest, replay, synthetic traffic, snapshots, incidents, drills, the local dev stack."""
