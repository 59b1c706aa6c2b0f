"""What a search leaves behind: Parquet tables, the Pareto picture, standalone models scored on test."""
