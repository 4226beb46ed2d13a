"""The ``workbench`` command line and the native-stack supervisor: a face over `core`, like the API and the app."""
