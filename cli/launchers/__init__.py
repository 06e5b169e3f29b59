"""Local processes `batcomputer up` starts when nothing else provides them: a Redis server and a Prefect
server, with the files that let commands run beside it find them."""
