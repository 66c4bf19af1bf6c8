"""The paper's reference numbers (`paper-numbers.csv`), shipped inside the installed package as
`s2i_bench.paper` (read by the report)."""
