"""Repository tooling that is not part of the installed kit: the static site and the README pictures."""
