package main

import "github.com/imaged/imaged/internal/api"

// The CLI reaches a running daemon through its control socket.
type controlClient = api.Client

func newControlClient(path, by string) *controlClient { return api.NewControlClient(path, by) }
