"""Landing, login and logout."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import authenticate
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from orchestrator.navigation import entries, landing


@login_required
def home(request):
    """Send the person to the page that fits them; the home page when nothing does."""
    nav = entries(request)
    request._steward_nav = nav
    target = landing(request, nav)
    if target is not None:
        return redirect(target)
    return render(request, "steward/home.html", {"title": "Steward"})


class LoginView(auth_views.LoginView):
    """The web app's sign-in page (people only: the authentication backend refuses the rest)."""

    template_name = "steward/login.html"
    redirect_authenticated_user = True
    extra_context = {"title": "Sign in"}


def admin_login(request, extra_context=None):
    """The admin's login serves administrators only: anyone else signs in to the web app.

    Someone signed in whom the admin does not serve (not staff) goes to their own pages
    instead of the admin's "you are not authorised" form; a visitor who is not signed in gets
    the admin's form, which itself only lets staff in.
    """
    if request.user.is_authenticated and not admin.site.has_permission(request):
        messages.info(request, "The admin is for administrators; your pages are here.")
        return redirect("home")
    response = admin.site.login(request, extra_context=extra_context)
    if request.method == "POST" and not request.user.is_authenticated:
        person = authenticate(
            request,
            username=request.POST.get("username", ""),
            password=request.POST.get("password", ""),
        )
        if person is not None and not person.is_staff:
            messages.info(request, "The admin is for administrators: sign in to Steward here.")
            return redirect("login")
    return response
