"""The sink's rules against a real Postgres, where test_sink.py leaves a mutant alive."""
