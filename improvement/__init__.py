"""Self-improvement: strategies, runs, scheduling, promotion, health and export."""
