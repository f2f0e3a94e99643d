package daemon

import (
	"fmt"
	"syscall"
	"time"

	"github.com/watchq/watchq"
	"github.com/watchq/watchq/daemon/policy"
	"github.com/watchq/watchq/record"
)

// account is what one uid holds in the daemon: the kernel's struct
// user_struct (its nr_watches, pipe_bufs and open pipes) for watchqd.
// Every field is guarded by Server.amu.
type account struct {
	conns, queues, pages, watches int
	// lim are the limits of the client that last touched the account,
	// for idle.
	lim policy.Limits

	// The publish token bucket: tokens left at last.
	tokens float64
	last   time.Time

	// The log bucket: denial and limit lines this uid may still cause,
	// refilled at logRate, and how many were suppressed since the last
	// line.
	logTokens  float64
	logLast    time.Time
	suppressed int
}

// Log rate per uid: a burst of logBurst lines, then logRate a second.
const (
	logBurst = 10
	logRate  = 1.0
)

// idle reports whether a holds nothing and its buckets are full again, so
// that forgetting it changes nothing.
func (a *account) idle(now time.Time) bool {
	lim := a.lim
	return a.conns == 0 && a.queues == 0 && a.pages == 0 && a.watches == 0 &&
		bucket(a.tokens, a.last, now, float64(lim.PublishRate), float64(lim.PublishBurst)) >= float64(lim.PublishBurst) &&
		bucket(a.logTokens, a.logLast, now, logRate, logBurst) >= logBurst
}

// bucket returns a token bucket's level at now: tokens at last, refilled
// at rate per second, capped at burst.
func bucket(tokens float64, last, now time.Time, rate, burst float64) float64 {
	if d := now.Sub(last); d > 0 {
		tokens += d.Seconds() * rate
	}
	return min(tokens, burst)
}

// pagesFor returns what a queue ring of notes costs: ceil(notes/32)
// pages, as watch_queue_set_size charges the pipe's user.
func pagesFor(notes int) int {
	return (notes + record.NotesPerPage - 1) / record.NotesPerPage
}

// accountLocked returns uid's account, creating it, and notes lim as its
// limits.
//
// Preconditions: s.amu is held.
func (s *Server) accountLocked(uid uint32, lim policy.Limits, now time.Time) *account {
	a := s.accounts[uid]
	if a == nil {
		a = &account{tokens: -1, logTokens: logBurst, logLast: now}
		s.accounts[uid] = a
	}
	a.lim = lim
	return a
}

// forgetLocked drops uid's account if it is idle, and now and then every
// idle account.
//
// Preconditions: s.amu is held.
func (s *Server) forgetLocked(uid uint32, a *account, now time.Time) {
	if a.idle(now) {
		delete(s.accounts, uid)
	}
	if now.Sub(s.swept) < time.Second {
		return
	}
	s.swept = now
	for u, o := range s.accounts {
		if o.idle(now) {
			delete(s.accounts, u)
		}
	}
}

// limitError is a request refused at a limit: logged (rate-limited) as
// such, answered with its errno.
type limitError struct{ e *watchq.Errno }

func (l *limitError) Error() string { return l.e.Error() }
func (l *limitError) Unwrap() error { return l.e }

func errLimit(errno syscall.Errno, format string, args ...any) error {
	return &limitError{&watchq.Errno{Errno: errno, Reason: fmt.Sprintf(format, args...)}}
}

// acquireConn charges a new connection of cred to its uid, or refuses it:
// EMFILE at the uid's limit, ENFILE at the daemon's.
func (s *Server) acquireConn(cred *watchq.Cred, lim policy.Limits) error {
	now := time.Now()
	s.amu.Lock()
	defer s.amu.Unlock()
	if s.nconns >= s.cfg.MaxClients {
		return errLimit(syscall.ENFILE, "watchqd serves %d connections, its limit (-max-clients)", s.nconns)
	}
	a := s.accountLocked(cred.UID, lim, now)
	if a.conns >= lim.Connections {
		n := a.conns
		s.forgetLocked(cred.UID, a, now)
		return errLimit(syscall.EMFILE, "uid %d holds %d connections, its limit (watchqd.conf: limits connections=%d)", cred.UID, n, lim.Connections)
	}
	a.conns++
	s.nconns++
	return nil
}

// releaseConn returns a connection's charge.
func (s *Server) releaseConn(uid uint32) {
	now := time.Now()
	s.amu.Lock()
	defer s.amu.Unlock()
	a := s.accounts[uid]
	a.conns--
	s.nconns--
	s.forgetLocked(uid, a, now)
}

// chargeQueue charges a new queue costing pages to c's uid, or refuses:
// EMFILE past the uid's queues, EPERM past its pages (as
// pipe-user-pages-hard does), ENFILE and ENOMEM past the daemon's totals.
func (s *Server) chargeQueue(c *conn, pages int) error {
	lim := c.limits()
	uid := c.cred.UID
	now := time.Now()
	s.amu.Lock()
	defer s.amu.Unlock()
	a := s.accountLocked(uid, lim, now)
	switch {
	case a.queues >= lim.Queues:
		return errLimit(syscall.EMFILE, "uid %d holds %d queues, its limit (%s)", uid, a.queues, c.limitSource("queues", lim.Queues))
	case a.pages+pages > lim.Pages:
		return errLimit(syscall.EPERM, "uid %d holds %d pages; a queue of %d more is past its limit (watchqd.conf: limits pages=%d)", uid, a.pages, pages, lim.Pages)
	case s.nqueues >= s.cfg.MaxTotalQueues:
		return errLimit(syscall.ENFILE, "watchqd holds %d queues, its limit (-max-total-queues)", s.nqueues)
	case s.npages+pages > s.cfg.MaxTotalPages:
		return errLimit(syscall.ENOMEM, "watchqd holds %d pages; %d more is past its limit (-max-total-pages)", s.npages, pages)
	}
	a.queues++
	a.pages += pages
	s.nqueues++
	s.npages += pages
	return nil
}

// chargePages charges pages more (a queue being sized) to c's uid.
func (s *Server) chargePages(c *conn, pages int) error {
	lim := c.limits()
	uid := c.cred.UID
	now := time.Now()
	s.amu.Lock()
	defer s.amu.Unlock()
	a := s.accountLocked(uid, lim, now)
	switch {
	case a.pages+pages > lim.Pages:
		return errLimit(syscall.EPERM, "uid %d holds %d pages; %d more is past its limit (watchqd.conf: limits pages=%d)", uid, a.pages, pages, lim.Pages)
	case s.npages+pages > s.cfg.MaxTotalPages:
		return errLimit(syscall.ENOMEM, "watchqd holds %d pages; %d more is past its limit (-max-total-pages)", s.npages, pages)
	}
	a.pages += pages
	s.npages += pages
	return nil
}

// chargeWatch charges one watch to c's uid, or refuses with EAGAIN (as
// add_watch_to_object does past the user's nr_watches limit).
func (s *Server) chargeWatch(c *conn) error {
	lim := c.limits()
	uid := c.cred.UID
	now := time.Now()
	s.amu.Lock()
	defer s.amu.Unlock()
	a := s.accountLocked(uid, lim, now)
	if a.watches >= lim.Watches {
		return errLimit(syscall.EAGAIN, "uid %d holds %d watches, its limit (%s)", uid, a.watches, c.limitSource("watches", lim.Watches))
	}
	a.watches++
	s.nwatches++
	return nil
}

// uncharge returns queues, pages and watches to c's uid. Freed pages count
// towards the next return of memory to the system.
func (s *Server) uncharge(c *conn, queues, pages, watches int) {
	if queues == 0 && pages == 0 && watches == 0 {
		return
	}
	uid := c.cred.UID
	now := time.Now()
	s.amu.Lock()
	a := s.accounts[uid]
	a.queues -= queues
	a.pages -= pages
	a.watches -= watches
	s.nqueues -= queues
	s.npages -= pages
	s.nwatches -= watches
	s.forgetLocked(uid, a, now)
	s.amu.Unlock()
	s.freed(pages + queues)
}

// takeToken takes one publish token from c's uid's bucket, or refuses with
// EAGAIN when the uid publishes faster than its rate.
func (s *Server) takeToken(c *conn) error {
	lim := c.limits()
	uid := c.cred.UID
	now := time.Now()
	s.amu.Lock()
	defer s.amu.Unlock()
	a := s.accountLocked(uid, lim, now)
	if a.tokens < 0 { // new: a full bucket
		a.tokens, a.last = float64(lim.PublishBurst), now
	}
	a.tokens = bucket(a.tokens, a.last, now, float64(lim.PublishRate), float64(lim.PublishBurst))
	a.last = now
	if a.tokens < 1 {
		s.throttled.Add(1)
		return errLimit(syscall.EAGAIN, "uid %d publishes faster than its limit of %d records a second, %d at once (watchqd.conf: limits publish-rate= publish-burst=)",
			uid, lim.PublishRate, lim.PublishBurst)
	}
	a.tokens--
	return nil
}

// mayLog reports whether c's uid may cause one more warning line now, and
// how many were suppressed before it.
func (s *Server) mayLog(c *conn) (ok bool, suppressed int) {
	now := time.Now()
	s.amu.Lock()
	defer s.amu.Unlock()
	a := s.accounts[c.cred.UID]
	if a == nil { // the connection is being torn down
		return false, 0
	}
	a.logTokens = bucket(a.logTokens, a.logLast, now, logRate, logBurst)
	a.logLast = now
	if a.logTokens < 1 {
		a.suppressed++
		return false, 0
	}
	a.logTokens--
	n := a.suppressed
	a.suppressed = 0
	return true, n
}

// usage returns what uid holds.
func (s *Server) usage(uid uint32) (conns, queues, pages, watches int) {
	s.amu.Lock()
	defer s.amu.Unlock()
	if a := s.accounts[uid]; a != nil {
		return a.conns, a.queues, a.pages, a.watches
	}
	return 0, 0, 0, 0
}
