"""What every training run here shares: the mesh and sharding rules, optimizer, checkpoints, metrics."""
