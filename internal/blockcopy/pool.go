package blockcopy

import (
	"context"
	"sync"
	"unsafe"
)

// alignedBuf returns n bytes starting on a directAlign boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n : skip+n]
}

func isAligned(p []byte) bool {
	return len(p) > 0 && uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

// pool is the copy's memory: at most max aligned buffers, made on first use.
type pool struct {
	size, max int
	mu        sync.Mutex
	made      int
	ch        chan []byte
}

func (p *pool) get(ctx context.Context) ([]byte, error) {
	select {
	case b := <-p.ch:
		return b, nil
	default:
	}
	p.mu.Lock()
	if p.made < p.max {
		p.made++
		p.mu.Unlock()
		return alignedBuf(p.size), nil
	}
	p.mu.Unlock()
	select {
	case b := <-p.ch:
		return b, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *pool) put(b []byte) { p.ch <- b }
