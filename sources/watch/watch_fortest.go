package watch

// FailWatchesForTest makes every directory watch the watcher adds from now on fail with err, as
// a system out of inotify watches does (ENOSPC); a nil err gives the real watches back. Only
// tests call it.
func (w *Watcher) FailWatchesForTest(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.addDir = w.fsw.Add
		return
	}
	w.addDir = func(string) error { return err }
}
