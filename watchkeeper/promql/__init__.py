"""PromQL: parser wrapper, AST, printer, vectorised evaluator, functions, Prometheus HTTP API."""
