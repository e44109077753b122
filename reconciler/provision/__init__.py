"""Node provisioners: how a Workspace gets its GPU nodes (Karpenter NodeClaims, AKS agent pools, BYO)."""
