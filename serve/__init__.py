"""Ray Serve application builders (`import_path: serve.<module>:<builder>` in `serve/config.yaml`)."""
