"""The protocol files (`*.toml`), shipped inside the installed package as `s2i_bench.protocols`
(read only by `s2i_bench.protocol`)."""
