"""The web app's shell: landing, login and logout, and the pages still to come."""
