"""The reference translator of Sound-to-Imagination (Fanzeres & Nadeu): models and training."""
