package blaxeltest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
)

// The API side of sandboxes: GET {base}/sandboxes/NAME answers a sandbox whose metadata.url is
// its own host, as Blaxel's API names a per-sandbox *.bl.run host, and GET
// {base}/sandboxes/NAME/previews/P a preview whose spec.url is a preview host. A SandboxHost is
// such a host: a second loopback server that checks every call's token as the API does.

// AddSandbox makes the API answer the sandbox name with metadata.url set to url.
func (s *Server) AddSandbox(name, url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sandboxes[name] = url
}

// AddPreview makes the API answer the preview name of sandbox with spec.url set to url.
func (s *Server) AddPreview(sandbox, name, url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.previews[sandbox+"/"+name] = url
}

// sandboxAnswer is the API's answer for path (under /v0), when it names a sandbox or preview
// added, with the workspace of the call.
func (s *Server) sandboxAnswer(path, workspace string) (any, bool) {
	segs := strings.Split(strings.Trim(strings.TrimPrefix(path, "/v0"), "/"), "/")
	if len(segs) < 2 || segs[0] != "sandboxes" {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sbx, ok := s.sandboxes[segs[1]]
	switch {
	case !ok:
		return nil, false
	case len(segs) == 2:
		return map[string]any{
			"metadata": map[string]any{"name": segs[1], "workspace": workspace, "url": sbx},
			"spec":     map[string]any{"runtime": map[string]any{"image": "blaxel/base-image:latest", "memory": 4096}},
			"status":   "DEPLOYED",
		}, true
	case len(segs) == 4 && segs[2] == "previews":
		u, ok := s.previews[segs[1]+"/"+segs[3]]
		if !ok {
			return nil, false
		}
		return map[string]any{
			"metadata": map[string]any{"name": segs[3], "workspace": workspace, "resourceName": segs[1]},
			"spec":     map[string]any{"port": 3000, "public": false, "url": u},
		}, true
	}
	return nil, false
}

// SandboxHost is a fake sandbox (or preview) host: the few calls of the sandbox API that
// @blaxel/core's filesystem and process clients make (PUT and GET /filesystem/PATH with JSON
// content, POST /process running "echo …"), and any other path answered "preview ok" as a
// preview's web server would. Every call must carry a token the API accepts for its
// X-Blaxel-Workspace (an API key or a JWT it issued, unexpired), else 401.
type SandboxHost struct {
	*httptest.Server
	api *Server

	mu      sync.Mutex
	files   map[string]string
	ok      int
	refused map[string]int // reason → count
	tokens  map[string]int // token → calls accepted with it
}

// NewSandboxHost starts a sandbox host on 127.0.0.1 that checks tokens against api.
func NewSandboxHost(api *Server) *SandboxHost {
	h := &SandboxHost{api: api, files: map[string]string{}, refused: map[string]int{}, tokens: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /filesystem/{path...}", h.writeFile)
	mux.HandleFunc("GET /filesystem/{path...}", h.readFile)
	mux.HandleFunc("POST /process", h.process)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "preview ok: "+r.URL.Path+"\n")
	})
	h.Server = httptest.NewServer(h.checked(mux))
	return h
}

// checked refuses a call whose token the API would refuse, and counts each.
func (h *SandboxHost) checked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		reason, desc := h.api.authorize(tok, r.Header.Get("X-Blaxel-Workspace"))
		h.mu.Lock()
		if reason != "" {
			h.refused[reason]++
		} else {
			h.ok++
			h.tokens[tok]++
		}
		h.mu.Unlock()
		if reason != "" {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": reason, "error_description": desc})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// SandboxCalls counts the calls the host served and refused (by reason).
type SandboxCalls struct {
	OK      int
	Refused map[string]int
	Tokens  map[string]int // token → calls served with it
}

// Calls returns the counts so far.
func (h *SandboxHost) Calls() SandboxCalls {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := SandboxCalls{OK: h.ok, Refused: map[string]int{}, Tokens: map[string]int{}}
	for k, v := range h.refused {
		c.Refused[k] = v
	}
	for k, v := range h.tokens {
		c.Tokens[k] = v
	}
	return c
}

// File returns what was written at path ("/tmp/a.txt").
func (h *SandboxHost) File(path string) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.files[cleanPath(path)]
	return c, ok
}

func cleanPath(p string) string { return "/" + strings.TrimLeft(p, "/") }

func (h *SandboxHost) writeFile(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Content     *string `json:"content"`
		IsDirectory bool    `json:"isDirectory"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || (body.Content == nil && !body.IsDirectory) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want a JSON body with content"})
		return
	}
	p := cleanPath(r.PathValue("path"))
	if body.Content != nil {
		h.mu.Lock()
		h.files[p] = *body.Content
		h.mu.Unlock()
	}
	writeJSON(w, http.StatusOK, map[string]string{"message": "File created successfully", "path": p})
}

func (h *SandboxHost) readFile(w http.ResponseWriter, r *http.Request) {
	p := cleanPath(r.PathValue("path"))
	h.mu.Lock()
	c, ok := h.files[p]
	h.mu.Unlock()
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such file: " + p})
		return
	}
	name := p[strings.LastIndexByte(p, '/')+1:]
	writeJSON(w, http.StatusOK, map[string]any{"path": p, "name": name, "content": c, "size": len(c),
		"permissions": "0644", "owner": "root", "group": "root", "lastModified": time.Now().UTC().Format(time.RFC3339)})
}

// process runs "echo ARGS" (its only command): stdout is ARGS and a newline, exit code 0; any
// other command exits 127.
func (h *SandboxHost) process(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Command string `json:"command"`
		Name    string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil || body.Command == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want a JSON body with command"})
		return
	}
	stdout, stderr, code := "", "", 0
	if args, ok := strings.CutPrefix(body.Command, "echo "); ok {
		stdout = args + "\n"
	} else {
		stderr, code = "sh: command not found\n", 127
	}
	now := time.Now().UTC().Format(time.RFC3339)
	writeJSON(w, http.StatusOK, map[string]any{"pid": "1234", "name": body.Name, "command": body.Command, "status": "completed",
		"exitCode": code, "stdout": stdout, "stderr": stderr, "logs": stdout + stderr, "workingDir": "/", "startedAt": now, "completedAt": now})
}
