package blobstore

import (
	"os"
	"syscall"
	"time"
)

// changeTime is fi's status change time (st_ctime).
func changeTime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Unix())
	}
	return time.Time{}
}
