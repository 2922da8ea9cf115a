// A Go client of the ticketing mesh on the stubs `make stubs` writes to gen/go,
// over gRPC through Envoy: the admin creates an event, a fan registers, logs in,
// books, reads and cancels; then a booking of a sold seat and a call without a
// token are refused, and each error is read down to its ErrorInfo reason.
//
// Built offline from Debian's Go packages (`make stubs` first, which links gen/go
// into var/gopath as ticketing.local/gen/go):
//
//	GO111MODULE=off GOPATH=$PWD/var/gopath:/usr/share/gocode \
//	  EDGE=localhost:8080 ADMIN_EMAIL=admin@example.com go run ./clients/go
package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "ticketing.local/gen/go/ticketing/auth/v1"
	bookingv1 "ticketing.local/gen/go/ticketing/booking/v1"
	commonv1 "ticketing.local/gen/go/ticketing/common/v1"
	eventv1 "ticketing.local/gen/go/ticketing/event/v1"
	paymentv1 "ticketing.local/gen/go/ticketing/payment/v1"
)

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

// signedIn carries the bearer token in the call's metadata.
func signedIn(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// reason is the ErrorInfo reason of a gRPC error, from its grpc-status-details-bin.
func reason(err error) string {
	for _, detail := range status.Convert(err).Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return "(no ErrorInfo)"
}

func requestID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		log.Fatal(err)
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Envoy's listener speaks gRPC over cleartext HTTP/2 (h2c) on the edge port.
	conn, err := grpc.DialContext(ctx, env("EDGE", "localhost:8080"), grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	auth := authv1.NewAuthServiceClient(conn)
	events := eventv1.NewEventServiceClient(conn)
	bookings := bookingv1.NewBookingServiceClient(conn)
	must := func(err error) {
		if err != nil {
			log.Fatalf("%v (reason %s)", err, reason(err))
		}
	}

	admin, err := auth.Login(ctx, &authv1.LoginRequest{
		Email: env("ADMIN_EMAIL", "admin@example.com"), Password: env("ADMIN_PASSWORD", "admin-change-me")})
	must(err)
	event, err := events.CreateEvent(signedIn(ctx, admin.AccessToken), &eventv1.CreateEventRequest{
		Event: &eventv1.Event{
			Title: "Opening night", Venue: "Main Hall",
			StartsAt: timestamppb.New(time.Date(2030, 6, 1, 20, 0, 0, 0, time.UTC)),
			Tiers: []*eventv1.EventTier{{Tier: eventv1.Tier_TIER_VIP, Rows: 2, SeatsPerRow: 10,
				Price: &commonv1.Money{CurrencyCode: "USD", AmountMinor: 15000}}},
		}})
	must(err)

	email := "go-" + requestID() + "@example.com"
	_, err = auth.Register(ctx, &authv1.RegisterRequest{Email: email, Password: "correct-horse", DisplayName: "Gopher"})
	must(err)
	tokens, err := auth.Login(ctx, &authv1.LoginRequest{Email: email, Password: "correct-horse"})
	must(err)
	fan := signedIn(ctx, tokens.AccessToken)
	card := &paymentv1.PaymentMethod{CardNumber: "4242424242424242", ExpMonth: 12, ExpYear: 2030, Cvc: "123"}

	booking, err := bookings.CreateBooking(fan, &bookingv1.CreateBookingRequest{
		EventId: event.EventId, SeatIds: []string{"vip-1-1", "vip-1-2"}, PaymentMethod: card, RequestId: requestID()})
	must(err)
	fmt.Println(booking.State, booking.Total.AmountMinor, booking.Total.CurrencyCode)
	read, err := bookings.GetBooking(fan, &bookingv1.GetBookingRequest{BookingId: booking.BookingId})
	must(err)
	fmt.Println(len(read.Seats), "seats:", read.Seats[0].SeatId, read.Seats[1].SeatId)

	// vip-1-2 is sold: the booking service refuses, with its reason.
	_, err = bookings.CreateBooking(fan, &bookingv1.CreateBookingRequest{
		EventId: event.EventId, SeatIds: []string{"vip-1-2"}, PaymentMethod: card, RequestId: requestID()})
	fmt.Println("refused:", status.Code(err), reason(err))

	cancelled, err := bookings.CancelBooking(fan, &bookingv1.CancelBookingRequest{BookingId: booking.BookingId})
	must(err)
	fmt.Println(cancelled.State)

	// No token: Envoy's jwt_authn refuses before any service sees the call.
	_, err = bookings.GetBooking(ctx, &bookingv1.GetBookingRequest{BookingId: booking.BookingId})
	fmt.Println("refused:", status.Code(err), reason(err))
}
