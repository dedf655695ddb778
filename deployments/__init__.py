"""Ray Serve deployments: thin classes that hold a stage engine, plus the application builder."""
