package webtransport

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSendStreamClose(t *testing.T) {
	testCases := []struct {
		name           string
		quicErrorCode  quic.StreamErrorCode
		expectedErr    error
		errMsgContains string
	}{
		{
			name:           "invalid stream error",
			quicErrorCode:  1337,
			errMsgContains: "stream reset, but failed to convert stream error",
		},
		{
			name:          "valid stream error",
			quicErrorCode: 0x52e5ac983162, // value taken from the draft, corresponds to 0xffffffff
			expectedErr:   &StreamError{ErrorCode: StreamErrorCode(0xffffffff), Remote: true},
		},
	}

	for _, tc := range testCases {
		t.Run(tc.name, func(t *testing.T) {
			sendStr, recvStr := newUniStreamPair(t)
			recvStr.CancelRead(tc.quicErrorCode)
			str := newSendStream(sendStr, nil, nil, nil, func() {})

			// eventually, the stream reset will be received and the write will fail
			var writeErr error
			for {
				_, writeErr = str.Write([]byte("foo"))
				if writeErr != nil {
					break
				}
				time.Sleep(time.Millisecond)
			}

			if tc.expectedErr != nil {
				require.ErrorIs(t, writeErr, tc.expectedErr)
			} else {
				require.ErrorContains(t, writeErr, tc.errMsgContains)
			}
		})
	}
}

func TestSendStreamSessionGone(t *testing.T) {
	sendStr, recvStr := newUniStreamPair(t)
	str := newSendStream(sendStr, nil, nil, nil, func() {})

	// simulate remote side sending WTSessionGoneErrorCode
	recvStr.CancelRead(WTSessionGoneErrorCode)

	errChan := make(chan error, 1)
	go func() {
		for {
			if _, err := str.Write([]byte("foo")); err != nil {
				errChan <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	select {
	case <-errChan:
		t.Fatal("Write should be blocking")
	case <-time.After(scaleDuration(10 * time.Millisecond)):
	}

	str.closeWithSession(assert.AnError)

	select {
	case err := <-errChan:
		require.ErrorIs(t, err, assert.AnError)
	case <-time.After(scaleDuration(10 * time.Millisecond)):
		t.Fatal("Write didn't unblock")
	}
}

func TestSendStreamSessionGoneDeadline(t *testing.T) {
	t.Run("deadline expires while waiting", func(t *testing.T) {
		sendStr, recvStr := newUniStreamPair(t)
		str := newSendStream(sendStr, nil, nil, nil, func() {})

		require.NoError(t, str.SetWriteDeadline(time.Now().Add(scaleDuration(20*time.Millisecond))))
		recvStr.CancelRead(WTSessionGoneErrorCode)

		errChan := make(chan error, 1)
		go func() {
			for {
				if _, err := str.Write([]byte("foo")); err != nil {
					errChan <- err
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()

		select {
		case err := <-errChan:
			require.True(t, isTimeoutError(err), "expected timeout error, got: %v", err)
		case <-time.After(scaleDuration(100 * time.Millisecond)):
			t.Fatal("Write didn't unblock after deadline")
		}
	})

	t.Run("deadline changed while waiting", func(t *testing.T) {
		sendStr, recvStr := newUniStreamPair(t)
		str := newSendStream(sendStr, nil, nil, nil, func() {})

		recvStr.CancelRead(WTSessionGoneErrorCode)

		errChan := make(chan error, 1)
		go func() {
			for {
				if _, err := str.Write([]byte("foo")); err != nil {
					errChan <- err
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()

		select {
		case <-errChan:
			t.Fatal("Write should be blocking")
		case <-time.After(scaleDuration(10 * time.Millisecond)):
		}

		require.NoError(t, str.SetWriteDeadline(time.Now().Add(scaleDuration(10*time.Millisecond))))

		select {
		case err := <-errChan:
			require.True(t, isTimeoutError(err), "expected timeout error, got: %v", err)
		case <-time.After(scaleDuration(100 * time.Millisecond)):
			t.Fatal("Write didn't unblock after deadline was set")
		}
	})
}

func TestSendStreamHeaderRetryAfterDeadlineError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()

	client, server := newConnPair(t, newUDPConnLocalhost(t), newUDPConnLocalhost(t))

	clientStr, err := client.OpenUniStreamSync(ctx)
	require.NoError(t, err)

	hdr := []byte("test-header")
	str := newSendStream(clientStr, hdr, nil, nil, func() {})

	require.NoError(t, str.SetWriteDeadline(time.Now().Add(-time.Second)))

	_, err = str.Write([]byte("data"))
	require.Error(t, err)
	require.True(t, isTimeoutError(err))

	require.NoError(t, str.SetWriteDeadline(time.Time{}))

	// second write should succeed and include the header
	_, err = str.Write([]byte("data"))
	require.NoError(t, err)
	require.NoError(t, str.Close())

	// verify that the header was written
	serverStr, err := server.AcceptUniStream(ctx)
	require.NoError(t, err)

	data, err := io.ReadAll(serverStr)
	require.NoError(t, err)
	require.Equal(t, append(hdr, []byte("data")...), data)
}

func TestSendStreamWriteDuringSessionGoneAndCloseSession(t *testing.T) {
	sendStr, recvStr := newUniStreamPair(t)

	sm := newOutgoingUniStreamsMap(nil, 0, maxOutgoingStreams, nil, func(c capsule) {
		t.Fatalf("unexpected capsule: %#v", c)
	})
	str := newSendStream(sendStr, nil, nil, nil, func() { sm.removeStream(sendStr.StreamID()) })
	sm.mx.Lock()
	sm.m[sendStr.StreamID()] = str
	sm.mx.Unlock()

	// write in a loop
	errChan := make(chan error, 1)
	go func() {
		for {
			if _, err := str.Write([]byte("foo")); err != nil {
				errChan <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	// the remote peer sends a WT_SESSION_GONE
	recvStr.CancelRead(WTSessionGoneErrorCode)

	// Write() should block, waiting for closeWithSession()
	select {
	case <-errChan:
		t.Fatal("should not happen")
	case <-time.After(scaleDuration(10 * time.Millisecond)):
	}

	sessionErr := &SessionError{ErrorCode: 42, Message: "bye"}
	sm.CloseSession(sessionErr)

	select {
	case err := <-errChan:
		require.ErrorIs(t, err, sessionErr)
	case <-time.After(scaleDuration(time.Second)):
		t.Fatal("Write() should not hang after CloseSession()")
	}
}

type blockingHeaderStream struct {
	unblock chan struct{}
}

func (s *blockingHeaderStream) Write(b []byte) (int, error) {
	if string(b) == "hdr" {
		<-s.unblock
	}
	return len(b), nil
}

func (*blockingHeaderStream) Close() error                     { return nil }
func (*blockingHeaderStream) StreamID() quic.StreamID          { return 0 }
func (*blockingHeaderStream) CancelWrite(quic.StreamErrorCode) {}
func (*blockingHeaderStream) Context() context.Context         { return context.Background() }
func (*blockingHeaderStream) SetWriteDeadline(time.Time) error { return nil }
func (*blockingHeaderStream) SetReliableBoundary()             {}
func (s *blockingHeaderStream) WriteWithLimit(b []byte, limit func(int) int) (int, error) {
	return s.Write(b)
}

func TestSendStreamWriteWhileSendingHeaderAsync(t *testing.T) {
	const errorCode StreamErrorCode = 42

	testCases := []struct {
		name        string
		stop        func(*SendStream) error
		expectedErr error
	}{
		{
			name:        "cancel",
			stop:        func(s *SendStream) error { s.CancelWrite(errorCode); return nil },
			expectedErr: &StreamError{ErrorCode: errorCode},
		},
		{
			name:        "close",
			stop:        (*SendStream).Close,
			expectedErr: errors.New("write on closed stream"),
		},
	}

	for _, tc := range testCases {
		t.Run(tc.name, func(t *testing.T) {
			qstr := &blockingHeaderStream{unblock: make(chan struct{})}
			str := newSendStream(qstr, []byte("hdr"), nil, nil, func() {})

			require.NoError(t, tc.stop(str))
			n, err := str.Write([]byte("payload"))
			close(qstr.unblock)
			require.Zero(t, n)
			require.Equal(t, tc.expectedErr, err)
		})
	}
}

func TestSendStreamDataFlowControl(t *testing.T) {
	sendStr, recvStr := newUniStreamPair(t)
	var capsules []capsule
	str := newSendStream(
		sendStr,
		[]byte("hdr"),
		newOutgoingDataFlowController(5),
		func(c capsule) { capsules = append(capsules, c) },
		func() {},
	)

	require.NoError(t, str.SetWriteDeadline(time.Now().Add(scaleDuration(20*time.Millisecond))))
	n, err := str.Write([]byte("abcdefgh"))
	require.Equal(t, 5, n)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)

	b := make([]byte, len("hdrabcde"))
	_, err = io.ReadFull(recvStr, b)
	require.NoError(t, err)
	require.Equal(t, "hdrabcde", string(b))

	n, err = str.Write([]byte("fgh"))
	require.Zero(t, n)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.Equal(t, []capsule{dataBlockedCapsule{MaximumData: 5}}, capsules)
}

func TestSendStreamDataFlowControlUpdate(t *testing.T) {
	sendStr, recvStr := newUniStreamPair(t)
	fc := newOutgoingDataFlowController(5)
	blocked := make(chan capsule, 1)
	str := newSendStream(sendStr, []byte("hdr"), fc, func(c capsule) { blocked <- c }, func() {})

	type writeResult struct {
		n   int
		err error
	}
	written := make(chan writeResult, 1)
	go func() {
		n, err := str.Write([]byte("abcdefgh"))
		written <- writeResult{n: n, err: err}
	}()

	select {
	case c := <-blocked:
		require.Equal(t, dataBlockedCapsule{MaximumData: 5}, c)
	case <-time.After(scaleDuration(time.Second)):
		t.Fatal("write didn't become flow control blocked")
	}
	select {
	case result := <-written:
		t.Fatalf("write completed while flow control blocked: %d bytes, %v", result.n, result.err)
	default:
	}

	require.NoError(t, fc.UpdateMaxData(8))
	select {
	case result := <-written:
		require.Equal(t, 8, result.n)
		require.NoError(t, result.err)
	case <-time.After(scaleDuration(time.Second)):
		t.Fatal("write wasn't unblocked by flow control update")
	}

	b := make([]byte, len("hdrabcdefgh"))
	_, err := io.ReadFull(recvStr, b)
	require.NoError(t, err)
	require.Equal(t, "hdrabcdefgh", string(b))
}
